//! Wiring of the quarantine review (crate `guard-review`): settings from the config, the Kafka
//! publisher that releases records, the refresh task, and `ingest-guard serve`.

use anyhow::Context;
use guard_config::Config;
use guard_review::auth::{Auth, Credential};
use guard_review::http::axum_get;
use guard_review::{Live, Publisher, Review, Settings};
use std::sync::Arc;
use std::time::Duration;

/// Releases records through guard-kafka's release client (an idempotent producer, acks=all,
/// and a plain consumer for end offsets and interrupted releases).
pub struct KafkaPublisher(guard_kafka::ReleaseClient);

impl KafkaPublisher {
    pub fn new(cfg: &Config) -> anyhow::Result<Self> {
        Ok(Self(
            guard_kafka::ReleaseClient::new(cfg).context("creating the release producer")?,
        ))
    }
}

impl Publisher for KafkaPublisher {
    fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, String> {
        self.0.end_offsets(topic).map_err(|e| e.to_string())
    }

    fn publish(
        &self,
        topic: &str,
        record: &guard_quarantine::RawRecord,
        extra: &[(String, String)],
    ) -> Result<(i32, i64), String> {
        let original = record.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref()));
        let added = extra.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes())));
        let again = guard_kafka::Republish {
            key: record.key.as_deref(),
            payload: record.payload.as_deref(),
            timestamp_ms: record.timestamp_ms,
            headers: original.chain(added).collect(),
        };
        self.0.publish(topic, &again).map_err(|e| e.to_string())
    }

    fn find(&self, topic: &str, since: &[(i32, i64)], header: &str, value: &str) -> Result<Option<(i32, i64)>, String> {
        self.0.find(topic, since, header, value).map_err(|e| e.to_string())
    }
}

/// Review settings from the config.
pub fn settings(cfg: &Config) -> Settings {
    let r = &cfg.review;
    Settings {
        quarantine: crate::build::quarantine_where(cfg),
        audit_dir: r
            .audit_dir
            .clone()
            .unwrap_or_else(|| cfg.quarantine.dir.join("_review")),
        read_only: r.read_only,
        release_topic: r.release_topic.clone().or_else(|| cfg.kafka.output_topic.clone()),
        source_header: r.source_header.clone().or_else(|| cfg.drift.source_header.clone()),
        max_indexed_rows: r.max_indexed_rows,
        provenance_header: (!cfg.kafka.provenance_header.is_empty()).then(|| cfg.kafka.provenance_header.clone()),
    }
}

/// The reviewers of the config.
pub fn auth(cfg: &Config) -> anyhow::Result<Auth> {
    let creds = cfg
        .review
        .reviewers
        .iter()
        .map(|r| {
            Credential::from_hex(&r.name, &r.password_sha256).with_context(|| format!("review.reviewers: {}", r.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if creds.is_empty() {
        tracing::warn!("no [[review.reviewers]] configured: the review dashboard refuses every request");
    }
    Ok(Auth::new(creds, Duration::from_secs(cfg.review.session_ttl_s.max(60))))
}

/// Open the review service (off the async workers: it scans the quarantine folder).
pub fn open(cfg: &Config, publisher: Option<Arc<dyn Publisher>>, live: Live) -> anyhow::Result<Arc<Review>> {
    let store = crate::build::quarantine_store(cfg)?;
    let review =
        Review::open(settings(cfg), store, auth(cfg)?, publisher, live).context("opening the review service")?;
    Ok(Arc::new(review))
}

/// Re-scan the quarantine folder every `interval` until the process ends.
pub fn spawn_refresh(review: Arc<Review>, interval: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let r = Arc::clone(&review);
            match tokio::task::spawn_blocking(move || r.refresh()).await {
                Ok(Ok(n)) if n > 0 => tracing::debug!(rows = n, "review index refreshed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "review index refresh failed"),
                _ => {}
            }
        }
    });
}

/// `ingest-guard serve`: the dashboard alone, until SIGINT/SIGTERM.
pub fn serve(cfg: Config, with_broker: bool) -> anyhow::Result<std::process::ExitCode> {
    crate::build::init_tracing(&cfg);
    let prom = crate::build::init_metrics()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let publisher: Option<Arc<dyn Publisher>> = if with_broker && cfg.kafka.output_topic.is_some() {
            Some(Arc::new(KafkaPublisher::new(&cfg)?))
        } else {
            None
        };
        let c = cfg.clone();
        let live = Live {
            features_of: features_of(&cfg),
            ..Live::default()
        };
        let review = tokio::task::spawn_blocking(move || open(&c, publisher, live))
            .await
            .context("opening the review service")??;
        spawn_refresh(
            Arc::clone(&review),
            Duration::from_millis(cfg.review.refresh_interval_ms.max(100)),
        );
        let addr: std::net::SocketAddr = cfg.server.listen.parse().context("server.listen")?;
        let app = guard_review::http::routes(review).route(
            "/metrics",
            axum_get(move || {
                let text = prom.render();
                async move { text }
            }),
        );
        tracing::info!(%addr, quarantine = %crate::build::quarantine_where(&cfg), "review dashboard at http://{addr}/review");
        guard_server::serve(addr, app, async {
            shutdown_signal().await;
        })
        .await?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A record's numeric features against its route's baseline: the value, the baseline's
/// equal-frequency bin it falls in (so its quantile range), and the baseline's mean, std,
/// min and max. Routes without a baseline give nothing.
pub fn features_of(cfg: &Config) -> Option<guard_review::FeaturesOf> {
    let mut by_topic = std::collections::HashMap::new();
    for r in &cfg.routes {
        let Some(b) = &r.baseline else { continue };
        let Ok(schema) = guard_validate::DomainSchema::load(&r.schema) else {
            continue;
        };
        match guard_drift::TopicDrift::load(b, schema.guard()) {
            Ok(t) => {
                by_topic.insert(r.topic.clone(), (schema, Arc::clone(&t.baseline)));
            }
            Err(e) => tracing::warn!(topic = %r.topic, error = %e, "review: baseline not loaded"),
        }
    }
    if by_topic.is_empty() {
        return None;
    }
    Some(Arc::new(move |topic: &str, value: &serde_json::Value| {
        let (schema, base) = by_topic.get(topic)?;
        let values = schema.numeric_features(value);
        let rows: Vec<serde_json::Value> = base
            .numeric()
            .zip(values)
            .map(|(f, x)| {
                let bins = f.bins.len().max(1);
                let m = &f.profile.moments;
                let fin = |v: f64| v.is_finite().then_some(v);
                let (bin, lo, hi) = if x.is_finite() {
                    let i = f.bins.index(x);
                    (
                        Some(i),
                        Some(i as f64 / bins as f64),
                        Some((i + 1) as f64 / bins as f64),
                    )
                } else {
                    (None, None, None)
                };
                serde_json::json!({
                    "name": f.name,
                    "value": fin(x),
                    "bin": bin,
                    "bins": bins,
                    "quantile_low": lo,
                    "quantile_high": hi,
                    "outside_baseline_range": x.is_finite() && (x < m.min() || x > m.max()),
                    "baseline_mean": fin(m.mean()),
                    "baseline_std": fin(m.variance().sqrt()),
                    "baseline_min": fin(m.min()),
                    "baseline_max": fin(m.max()),
                })
            })
            .collect();
        Some(serde_json::Value::Array(rows))
    }))
}

/// Drift test values of the current windows, sampled every `every`, the last `keep` samples:
/// per topic and feature, PSI, KS and whether it fired.
pub fn drift_history(
    hub: Arc<guard_drift::DriftHub>,
    every: Duration,
    keep: usize,
) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    let extract: Arc<dyn Fn() -> serde_json::Value + Send + Sync> = Arc::new(move || {
        let mut topics = serde_json::Map::new();
        for t in hub.stats(false).topics {
            let feats: serde_json::Map<String, serde_json::Value> = t
                .current
                .features
                .into_iter()
                .map(|f| {
                    let v = serde_json::json!({"psi": f.drift.psi, "ks": f.drift.ks, "firing": f.firing});
                    (f.name, v)
                })
                .collect();
            topics.insert(t.topic, serde_json::Value::Object(feats));
        }
        serde_json::Value::Object(topics)
    });
    sampler(extract, every, keep)
}

/// Sample `f` every `every`, keeping the last `keep` samples as `[{at_ms, value}]`.
pub fn sampler(
    f: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    every: Duration,
    keep: usize,
) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    let samples: Arc<std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>> = Arc::default();
    let writer = Arc::clone(&samples);
    tokio::spawn(async move {
        loop {
            let g = Arc::clone(&f);
            if let Ok(v) = tokio::task::spawn_blocking(move || g()).await {
                let mut s = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                s.push_back(serde_json::json!({"at_ms": guard_core::now_ms(), "value": v}));
                while s.len() > keep {
                    s.pop_front();
                }
            }
            tokio::time::sleep(every).await;
        }
    });
    Arc::new(move || {
        let s = samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        serde_json::Value::Array(s.iter().cloned().collect())
    })
}
