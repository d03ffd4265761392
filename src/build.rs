//! Building the guard's parts from a configuration: telemetry, the judge, the quarantine
//! store, the deliverability check. `run`, `serve`, `check`, the quarantine commands and the
//! evaluation all build through here, so what is checked or evaluated is what runs.

use anyhow::Context;
use guard_config::{Config, LogFormat};
use guard_quarantine::{LocalDirStore, QuarantineStore};
use guard_validate::Judge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets (seconds) for every `*_seconds` histogram.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for anomaly scores (reconstruction errors span orders of magnitude).
const ANOMALY_BUCKETS: &[f64] = &[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0];

/// Buckets for label-consistency scores (1 − p): the interesting part is close to 1.
const LABEL_BUCKETS: &[f64] = &[0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0];

/// Buckets for adversarial scores (rise of log p under a squeezer; at most about 13.8).
const ADVERSARIAL_BUCKETS: &[f64] = &[0.01, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 14.0];

pub fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("guard_score_anomaly".into()), ANOMALY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("guard_score_label".into()), LABEL_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("guard_score_adversarial".into()), ADVERSARIAL_BUCKETS)?
        .install_recorder()?;
    describe_metrics();
    Ok(handle)
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, Unit};
    guard_kafka::describe_metrics();
    guard_drift::describe_metrics();
    guard_pipeline::describe_metrics();
    guard_score::describe_metrics();
    guard_review::describe_metrics();
    guard_server::describe_metrics();
    // Emitted by the binary itself (run, events, profiles).
    describe_counter!(
        "guard_stats_profiles_unreadable_total",
        Unit::Count,
        "Records of the profiles topic that are not partition views"
    );
    describe_gauge!("guard_health_ready", Unit::Count, "1 when /readyz reports ready");
    describe_gauge!(
        "guard_score_provider_info",
        Unit::Count,
        "1 for the execution provider really scoring (cpu or cuda)"
    );
    describe_gauge!(
        "guard_pipeline_workers",
        Unit::Count,
        "Judge worker threads running (pipeline.workers; \"auto\": one per usable core)"
    );
    describe_counter!(
        "guard_stats_profiles_failed_total",
        Unit::Count,
        "Batches of partition views the profiles topic did not take (sent again next time)"
    );
}

pub fn build_judge(cfg: &Config) -> anyhow::Result<Judge> {
    Ok(guard_pipeline::judge_for(cfg)?)
}

/// The quarantine store the configuration names: object storage (`quarantine.url`) or the
/// local folder (`quarantine.dir`).
pub fn quarantine_store(cfg: &Config) -> anyhow::Result<Arc<dyn QuarantineStore>> {
    let q = &cfg.quarantine;
    Ok(match &q.url {
        Some(url) => Arc::new(
            guard_quarantine::ObjectStoreQuarantine::open(&guard_quarantine::ObjectSettings {
                url: url.clone(),
                endpoint: q.endpoint.clone(),
                region: q.region.clone(),
                allow_http: q.allow_http,
                request_timeout: Duration::from_millis(q.request_timeout_ms),
                credentials: None,
            })
            .with_context(|| format!("quarantine.url {url}"))?,
        ),
        None => Arc::new(LocalDirStore::new(&q.dir)),
    })
}

/// Where quarantine files go, for logs.
pub fn quarantine_where(cfg: &Config) -> String {
    cfg.quarantine
        .url
        .clone()
        .unwrap_or_else(|| cfg.quarantine.dir.display().to_string())
}

/// What the guard passes, it must be able to deliver: the clean producer's `message.max.bytes`
/// (if the configuration sets one) must carry `limits.max_record_bytes` plus the provenance
/// header. Without it, a record inside the limits would be refused by the producer.
pub fn deliverability(cfg: &Config, file: &str) -> Vec<String> {
    let need = guard_kafka::producer_message_max_bytes(cfg);
    let k = &cfg.kafka;
    let set = k
        .producer_properties
        .get("message.max.bytes")
        .map(|v| ("kafka.producer_properties", v))
        .or_else(|| k.properties.get("message.max.bytes").map(|v| ("kafka.properties", v)));
    let Some((table, v)) = set else { return Vec::new() };
    match v.trim().parse::<usize>() {
        Ok(n) if n >= need => Vec::new(),
        Ok(n) => vec![format!(
            "{file}: {table}.\"message.max.bytes\": {n} is below limits.max_record_bytes ({}) + {} bytes for the provenance header: records that pass the limits could not be delivered (raise it, or lower limits.max_record_bytes)",
            cfg.limits.max_record_bytes,
            guard_kafka::PRODUCER_HEADROOM
        )],
        Err(_) => vec![format!("{file}: {table}.\"message.max.bytes\": not a number")],
    }
}

#[cfg(test)]
mod tests {
    /// Every `guard_*` metric any crate emits has a description (so `/metrics` carries a
    /// `# HELP` line for it): a static scan of the workspace's sources.
    #[test]
    fn every_emitted_metric_is_described() {
        // Run time first: the compiled-in path is stale when a shared build cache was filled
        // from another clone.
        let root = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
        );
        let mut text = String::new();
        let mut dirs = vec![root.join("src"), root.join("crates")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d)
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .flatten()
            {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    text.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
        let names = |prefix: &str| -> std::collections::BTreeSet<String> {
            let mut out = std::collections::BTreeSet::new();
            for kind in ["counter", "gauge", "histogram"] {
                let open = format!("{prefix}{kind}!(");
                for (at, _) in text.match_indices(&open) {
                    let rest = text[at + open.len()..].trim_start();
                    if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                        if name.starts_with("guard_") {
                            out.insert(name.to_owned());
                        }
                    }
                }
            }
            out
        };
        let described = names("describe_");
        // `describe_counter!(` also contains `counter!(`: count emissions without the prefix.
        let emitted: std::collections::BTreeSet<String> = names("metrics::")
            .union(&names(" "))
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        assert!(emitted.len() > 40, "the scan found only {emitted:?}");
        let missing: Vec<&String> = emitted.difference(&described).collect();
        assert!(missing.is_empty(), "metrics without a description: {missing:?}");
    }
}
